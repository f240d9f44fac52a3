"""Weight import from PyTorch checkpoints: the official Dsfer-Net, SemiCD/RCL, SNUNet-CD,
DSAMNet, STANet, ChangeFormerV6 and VcT networks, torchvision's VGG16 and ResNet, the deep-stem ResNet-50
of CCT/SemiCD.

`init_backbone_variables` loads ImageNet weights (`config.init.backbone`) into a model's encoder
before training; `python -m jaxcd.convert` (the CLI on top of this package) writes a converted
official Dsfer-Net as a workdir's checkpoint.

State dicts are plain `{name: np.ndarray}` maps (see `load_state_dict`), so only reading `.pth`
needs torch. Conversion is strict: an unknown, missing or mis-shaped entry raises `DataError`
naming it. Layouts: conv OIHW -> HWIO, Linear (out, in) -> (in, out), LayerNorm (C, H, W) ->
(H, W, C), BatchNorm running statistics -> the `batch_stats` collection.

Modules: `torch_io` (reading files), `rules` (the shared table machinery), one per network
(`vgg`, `resnet`, `dsfernet`, `rcr`, `snunet`, `dsamnet`, `stanet`, `changeformer`, `vct`), `backbone`
(`config.init.backbone`).
"""
from jaxcd.weights.backbone import init_backbone_variables
from jaxcd.weights.changeformer import changeformer_from_official
from jaxcd.weights.dsamnet import dsamnet_from_official
from jaxcd.weights.dsfernet import dsfernet_from_torch
from jaxcd.weights.rcr import rcr_backbone_from_imagenet, rcr_from_official
from jaxcd.weights.resnet import resnet_from_torchvision
from jaxcd.weights.rules import Variables
from jaxcd.weights.snunet import snunet_from_official
from jaxcd.weights.stanet import stanet_from_official
from jaxcd.weights.torch_io import load_state_dict
from jaxcd.weights.vct import vct_from_official
from jaxcd.weights.vgg import vgg16_from_torchvision

__all__ = ["Variables", "changeformer_from_official", "dsamnet_from_official", "dsfernet_from_torch",
           "init_backbone_variables", "load_state_dict",
           "rcr_backbone_from_imagenet", "rcr_from_official", "resnet_from_torchvision",
           "snunet_from_official", "stanet_from_official", "vct_from_official",
           "vgg16_from_torchvision"]
