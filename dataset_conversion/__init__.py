"""Converters from the datasets as users download them to the nnU-Net v2 raw format.

One module per dataset (``kvasir``, ``busi``, ``lgg``, ``isic2018``, ``btcv``, ``kits23``, and the zero-shot ones
``ph2``, ``pranet_test``, ``tnscui2020``, ``tn3k``, plus the generic ``folder``), each with a
``convert_<dataset>(source, output_root=None, dataset_id=None, ...)`` function; ``cli`` registers
``nnunet-lmnet convert`` (default ids and names: see its docstring); ``common``, ``splits``, ``finish``,
``zero_shot`` (target vs training layout) and ``dataset_lock`` hold the shared code.
Kept import-free: the CLI imports this package at start-up.
"""
