"""Prediction with a trained model folder: nnU-Net's own predictor, with PyTorch or ONNX Runtime running the network."""
