"""DenseNet-161 as TorchServe's densenet161 example defines it: torchvision's DenseNet with
densenet161's sizes, in a model file with a single nn.Module subclass."""
from torchvision.models.densenet import DenseNet


class ImageClassifier(DenseNet):
    def __init__(self):
        super().__init__(growth_rate=48, block_config=(6, 12, 36, 24), num_init_features=96)
