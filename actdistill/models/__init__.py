"""Models: one contract (`_contract.py`), image (`timm_zoo.py`) and video (`video_zoo.py`) zoos, `create_model`."""

from actdistill.models import torchvision_video, video_demo, video_zoo  # noqa: F401  (importing registers the zoos)
from actdistill.models._contract import FeatureInfo, PretrainedCfg
from actdistill.models.factory import count_parameters, create_model, load_state_dict_file, model_summary
from actdistill.models.timm_zoo import TimmAdapter, create_timm

__all__ = [
    "FeatureInfo",
    "PretrainedCfg",
    "TimmAdapter",
    "count_parameters",
    "create_model",
    "create_timm",
    "load_state_dict_file",
    "model_summary",
]
