"""Paper 3: PCL self-supervised pre-training, with KL distillation on pretext logits (PCL's released code).

`pretext.py` (tuple sampling, the five pretext transforms), `augment.py` (PCL's per-clip augmentation),
`dataset.py` (the `pcl_ucf101` tuple dataset), `pcl.py` (memory banks, InfoNCE, the losses), `methods.py` (the
`pcl` and `pcl_kd` methods), `evaluate.py` (retrieval and linear probe on frozen features), `convergence.py`. The
network is `actdistill.models.pcl_net.PCLNet` (model `pcl`); `actdistill ssl-grid` (apps/ssl_grid.py) runs the grid.
"""
