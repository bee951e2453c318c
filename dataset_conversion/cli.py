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
| ``convert tnscui2020``  | 508        | ``Dataset508_TNSCUI2020`` | 3644 training, 910 in imagesTs      |
| ``convert tn3k``        | 509        | ``Dataset509_TN3K``       | 3493 in imagesTs/labelsTs (target)  |
| ``convert ph2``         | 510        | ``Dataset510_PH2``        | 200 in imagesTs/labelsTs (target)   |
| ``convert pranet-test`` | 511-515    | ``Dataset511_CVC300`` ... | one target dataset per subset       |
| ``convert folder``      | 520        | ``Dataset520_<NAME>``     | your images + masks (target)        |

The zero-shot converters (:mod:`.zero_shot`) take ``--mode target`` (every case in imagesTs/labelsTs,
numTraining 0) or ``--mode training`` (a full dataset with splits).

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

from nnunet_lmnet.cli_types import positive_float, positive_int

from .common import DEFAULT_NUM_PROCESSES, DEFAULTS

_HELP = {
    "kvasir": "Kvasir-SEG polyps (JPEG -> PNG, lossy masks thresholded)",
    "busi": "BUSI breast ultrasound (benign + malignant; multiple masks merged)",
    "lgg": "LGG kaggle_3m brain MRI (3 channels; 2D slices with patient-grouped folds, or --as-3d)",
    "isic2018": "ISIC 2018 Task 1 skin lesions (validation/test inputs to imagesTs)",
    "btcv": "BTCV abdomen CT, 13 organs (RawData; Testing to imagesTs)",
    "kits23": "KiTS23 kidney/tumour/cyst CT (region-based labels, NibabelIOWithReorient)",
    "tnscui2020": "TN-SCUI 2020 thyroid ultrasound (upper-case .PNG, 1 grey channel; test images to imagesTs)",
    "tn3k": "TN3K thyroid ultrasound, zero-shot target of TN-SCUI 2020 (JPEG masks thresholded, 1 grey channel)",
    "ph2": "PH2 dermoscopy, zero-shot target of ISIC 2018 (BMP, 1-bit and RGB masks; RGB)",
    "pranet-test": "PraNet's polyp TestDataset (CVC-300, CVC-ClinicDB, CVC-ColonDB, ETIS, Kvasir), zero-shot "
                   "targets of Kvasir-SEG: one dataset per subset (RGB)",
    "folder": "any folder of 2D images + a folder of masks (BUSIS, TUCC frames, your own data)",
}
_SOURCE_HELP = {
    "kvasir": "extracted kvasir-seg.zip (Kvasir-SEG/ or the folder holding it)",
    "busi": "Dataset_BUSI_with_GT/ or the folder holding it",
    "lgg": "the extracted Kaggle zip, kaggle_3m/ or lgg-mri-segmentation/",
    "isic2018": "the folder holding the extracted ISIC2018_Task1* folders",
    "btcv": "extracted RawData.zip (RawData/ or the folder holding it)",
    "kits23": "the neheller/kits23 clone (after kits23_download_data) or its dataset/ folder",
    "tnscui2020": "TNSCUI2020_train/ or the folder holding it (and tnscui2020_testset/)",
    "tn3k": "tn3k/ (trainval-image/, trainval-mask/, test-image/, test-mask/) or the folder holding it",
    "ph2": "the extracted PH2Dataset/ (with 'PH2 Dataset images/'), the folder holding it, or images/ + masks/",
    "pranet-test": "PraNet's extracted TestDataset/ (or one subset folder such as TestDataset/CVC-300)",
    "folder": "the folder with the images (PNG, JPEG, BMP, TIFF; not searched recursively)",
}
_MODE_DEFAULT = {"tnscui2020": "training", "tn3k": "target", "ph2": "target", "pranet-test": "target",
                 "folder": "target"}


def _common_arguments(parser: argparse.ArgumentParser, dataset: str) -> None:
    dataset_id, name = DEFAULTS[dataset]
    parser.add_argument("source", metavar="IMAGES_DIR" if dataset == "folder" else "SOURCE",
                        help=_SOURCE_HELP[dataset])
    if dataset == "folder":
        parser.add_argument("masks", metavar="MASKS_DIR", help="the folder with the masks (may be IMAGES_DIR "
                            "with --mask-suffix)")
    parser.add_argument("--dataset-id", type=positive_int, default=None, metavar="N",
                        help=f"nnU-Net dataset id (default {dataset_id})")
    parser.add_argument("--name", default=None, metavar="NAME",
                        required=not name, help=f"dataset name: the folder is DatasetXXX_NAME "
                                                f"({f'default {name}' if name else 'required'})")
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
    parser.add_argument("--num-processes", type=positive_int, default=DEFAULT_NUM_PROCESSES, metavar="N",
                        help=f"worker processes (default {DEFAULT_NUM_PROCESSES})")
    parser.set_defaults(func=_run, dataset=dataset)


def _run(args: argparse.Namespace) -> int:
    module_name = args.dataset.replace("-", "_")
    module = importlib.import_module(f"{__package__}.{module_name}")
    convert = getattr(module, f"convert_{module_name}")
    kwargs = dict(source=args.source, dataset_id=args.dataset_id, name=args.name, splits=args.splits,
                  overwrite=args.overwrite, num_processes=args.num_processes, verify=args.verify)
    for key in ("include_normal", "rgb", "as_3d", "spacing", "max_size", "labels", "skip_incomplete", "mode",
                "subset", "test_only", "masks", "mask_suffix", "channels", "label_map", "label_names"):
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
    for dataset in ("kvasir", "busi", "lgg", "isic2018", "btcv", "kits23", *_MODE_DEFAULT):
        parsers[dataset] = datasets.add_parser(dataset, help=_HELP[dataset], description=_HELP[dataset])
        _common_arguments(parsers[dataset], dataset)
    for dataset, mode in _MODE_DEFAULT.items():
        parsers[dataset].add_argument(
            "--mode", choices=("target", "training"), default=mode,
            help=f"'target': every labelled image to imagesTs/labelsTs with numTraining 0, a zero-shot test set "
                 f"for a model trained on another dataset (--splits do not apply); 'training': imagesTr/labelsTr "
                 f"with splits (default {mode})")

    parsers["busi"].add_argument("--include-normal", action="store_true",
                                 help="also convert the 133 'normal' images (empty masks); excluded by default")
    parsers["busi"].add_argument("--rgb", action="store_true",
                                 help="keep 3 channels (R, G, B) instead of converting every image to grey")
    parsers["lgg"].add_argument("--as-3d", action="store_true",
                                help=f"one NIfTI volume per patient instead of one 2D case per slice (default id "
                                     f"{DEFAULTS['lgg3d'][0]}, name {DEFAULTS['lgg3d'][1]})")
    parsers["lgg"].add_argument("--spacing", nargs=3, type=positive_float, default=(1.0, 1.0, 1.0),
                                metavar=("X", "Y", "Z"),
                                help="voxel spacing in mm assumed for --as-3d volumes (the TIFFs carry none; "
                                     "default 1 1 1)")
    parsers["isic2018"].add_argument("--max-size", type=positive_int, default=None, metavar="N",
                                     help="downscale images whose longer side exceeds N pixels (default: keep "
                                          "the native resolution)")
    parsers["btcv"].add_argument("--labels", choices=("all", "synapse8"), default="all",
                                 help="'all': the 13 organs (default); 'synapse8': TransUNet's 8-organ remap")
    parsers["pranet-test"].add_argument("--subset", action="append", default=None, metavar="NAME",
                                        help="convert only this subset (CVC-300, CVC-ClinicDB, CVC-ColonDB, "
                                             "ETIS-LaribPolypDB, Kvasir; repeatable). Default: every subset found, "
                                             "ids 511-515")
    parsers["tn3k"].add_argument("--test-only", action="store_true",
                                 help="only the 614 official test images (--mode target)")
    parsers["folder"].add_argument("--mask-suffix", default="", metavar="S",
                                   help="the mask of <stem>.png is <stem>S.<ext> (e.g. _mask); default: same stem")
    parsers["folder"].add_argument("--channels", choices=("grey", "rgb"), default="grey",
                                   help="1 grey channel (default; as BUSI and the thyroid sources) or 3 (R, G, B; "
                                        "as ISIC and Kvasir)")
    parsers["folder"].add_argument("--label-map", nargs="+", default=None, metavar="V:L",
                                   help="mask value -> label, e.g. 128:1 255:2 (exact, lossless masks only). "
                                        "Default: binary masks (0/255 or 0/1; JPEG thresholded at > 127)")
    parsers["folder"].add_argument("--label-names", nargs="+", default=None, metavar="NAME",
                                   help="names of labels 1..K in dataset.json (default foreground); use the "
                                        "source's (lesion, nodule, polyp) for a zero-shot target")
    parsers["kits23"].add_argument("--skip-incomplete", action="store_true",
                                   help="convert only the cases whose imaging has been downloaded (they are "
                                        "listed); without it an incomplete download is an error")
