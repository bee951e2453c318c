"""What leaves a results folder: challenge submissions and model cards."""
