"""``nnunet-lmnet convert DATASET SOURCE``: turn an extracted download into ``$nnUNet_raw/DatasetXXX_Name``.

| command                 | default id | default folder            | cases in the full download          |
|-------------------------|-----------:|---------------------------|-------------------------------------|
| ``convert kvasir``      | 501        | ``Dataset501_KvasirSEG``  | 1000 training                       |
| ``convert busi``        | 502        | ``Dataset502_BUSI``       | 647 training (780 --include-normal) |
| ``convert lgg``         | 503        | ``Dataset503_LGG``        | 3929 slices of 110 patients (2D)    |
| ``convert lgg --as-3d`` | 507        | ``Dataset507_LGG3D``      | 110 volumes                         |
| ``convert isic2018``    | 504        | ``Dataset504_ISIC2018``   | 2594 training, 1100 in imagesTs     |
| ``convert btcv``        | 505        | ``Dataset505_BTCV``       | 30 training, 20 in imagesTs         |
| ``convert kits23``      | 506        | ``Dataset506_KiTS23``     | 489 training                        |

Every subcommand takes ``SOURCE [--dataset-id N] [--name NAME] [--splits FILE ...] [--overwrite]
[--num-processes N] [--verify]``; the output goes to ``$nnUNet_raw`` (an error says so when it is unset). In Python,
``convert_<dataset>(source, dataset_id=None, name=None, ...)`` picks the same defaults. Split-file rules:
:mod:`nnunet_lmnet.dataset_conversion.splits`. Each module's docstring describes its layout and choices.

Only argparse is used at start-up: the dataset modules (numpy, PIL, nibabel, SimpleITK, nnunetv2) are imported
when a conversion runs.
"""
from __future__ import annotations

import argparse
import importlib

from .common import DEFAULT_NUM_PROCESSES, DEFAULTS

_HELP = {
    "kvasir": "Kvasir-SEG polyps (JPEG -> PNG, lossy masks thresholded)",
    "busi": "BUSI breast ultrasound (benign + malignant; multiple masks merged)",
    "lgg": "LGG kaggle_3m brain MRI (3 channels; 2D slices with patient-grouped folds, or --as-3d)",
    "isic2018": "ISIC 2018 Task 1 skin lesions (validation/test inputs to imagesTs)",
    "btcv": "BTCV abdomen CT, 13 organs (RawData; Testing to imagesTs)",
    "kits23": "KiTS23 kidney/tumour/cyst CT (region-based labels, NibabelIOWithReorient)",
}
_SOURCE_HELP = {
    "kvasir": "extracted kvasir-seg.zip (Kvasir-SEG/ or the folder holding it)",
    "busi": "Dataset_BUSI_with_GT/ or the folder holding it",
    "lgg": "the extracted Kaggle zip, kaggle_3m/ or lgg-mri-segmentation/",
    "isic2018": "the folder holding the extracted ISIC2018_Task1* folders",
    "btcv": "extracted RawData.zip (RawData/ or the folder holding it)",
    "kits23": "the neheller/kits23 clone (after kits23_download_data) or its dataset/ folder",
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _common_arguments(parser: argparse.ArgumentParser, dataset: str) -> None:
    dataset_id, name = DEFAULTS[dataset]
    parser.add_argument("source", metavar="SOURCE", help=_SOURCE_HELP[dataset])
    parser.add_argument("--dataset-id", type=_positive_int, default=None, metavar="N",
                        help=f"nnU-Net dataset id (default {dataset_id})")
    parser.add_argument("--name", default=None, metavar="NAME",
                        help=f"dataset name: the folder is DatasetXXX_NAME (default {name})")
    parser.add_argument("--splits", nargs="+", default=None, metavar="FILE",
                        help="published split lists (one id per line; a role word in each file name - train, "
                             "trainset, trainval, val, valset, test, testset - pairs them into folds, e.g. "
                             "busi_train1.txt busi_val1.txt) or an nnU-Net splits JSON; written as "
                             "splits_final.json. Default: deterministic 5-fold CV, grouped by patient. Give SOURCE "
                             "before --splits")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--verify", action="store_true",
                        help="run nnU-Net's dataset integrity check on the result before it is moved into place "
                             "(what nnUNetv2_plan_and_preprocess --verify_dataset_integrity does later)")
    parser.add_argument("--num-processes", type=_positive_int, default=DEFAULT_NUM_PROCESSES, metavar="N",
                        help=f"worker processes (default {DEFAULT_NUM_PROCESSES})")
    parser.set_defaults(func=_run, dataset=dataset)


def _run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"{__package__}.{args.dataset}")
    convert = getattr(module, f"convert_{args.dataset}")
    kwargs = dict(source=args.source, dataset_id=args.dataset_id, name=args.name, splits=args.splits,
                  overwrite=args.overwrite, num_processes=args.num_processes, verify=args.verify)
    for key in ("include_normal", "rgb", "as_3d", "spacing", "max_size", "labels", "skip_incomplete"):
        if hasattr(args, key):
            kwargs[key] = getattr(args, key)
    convert(**kwargs)
    return 0


def add_parser(subparsers) -> None:
    """Register ``convert`` and its per-dataset subcommands on the main CLI's subparsers."""
    convert = subparsers.add_parser(
        "convert", help="convert a downloaded dataset into $nnUNet_raw/DatasetXXX_Name",
        description="Convert an extracted dataset download into nnU-Net's raw format in $nnUNet_raw. The source "
                    "is only read; the result appears only when complete.")
    datasets = convert.add_subparsers(dest="dataset", metavar="DATASET")
    datasets.required = True
    parsers = {}
    for dataset in ("kvasir", "busi", "lgg", "isic2018", "btcv", "kits23"):
        parsers[dataset] = datasets.add_parser(dataset, help=_HELP[dataset], description=_HELP[dataset])
        _common_arguments(parsers[dataset], dataset)

    parsers["busi"].add_argument("--include-normal", action="store_true",
                                 help="also convert the 133 'normal' images (empty masks); excluded by default")
    parsers["busi"].add_argument("--rgb", action="store_true",
                                 help="keep 3 channels (R, G, B) instead of converting every image to grey")
    parsers["lgg"].add_argument("--as-3d", action="store_true",
                                help=f"one NIfTI volume per patient instead of one 2D case per slice (default id "
                                     f"{DEFAULTS['lgg3d'][0]}, name {DEFAULTS['lgg3d'][1]})")
    parsers["lgg"].add_argument("--spacing", nargs=3, type=_positive_float, default=(1.0, 1.0, 1.0),
                                metavar=("X", "Y", "Z"),
                                help="voxel spacing in mm assumed for --as-3d volumes (the TIFFs carry none; "
                                     "default 1 1 1)")
    parsers["isic2018"].add_argument("--max-size", type=_positive_int, default=None, metavar="N",
                                     help="downscale images whose longer side exceeds N pixels (default: keep "
                                          "the native resolution)")
    parsers["btcv"].add_argument("--labels", choices=("all", "synapse8"), default="all",
                                 help="'all': the 13 organs (default); 'synapse8': TransUNet's 8-organ remap")
    parsers["kits23"].add_argument("--skip-incomplete", action="store_true",
                                   help="convert only the cases whose imaging has been downloaded (they are "
                                        "listed); without it an incomplete download is an error")
