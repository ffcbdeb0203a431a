"""Faster R-CNN with a ResNet-50 FPN backbone, as TorchServe's fast-rcnn example defines it.
The backbone is built without ImageNet weights: the state_dict given to the archiver has them."""
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FasterRCNN


class FRCNNObjectDetector(FasterRCNN):
    def __init__(self, num_classes=91, **kwargs):
        backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None)
        super().__init__(backbone, num_classes, **kwargs)
