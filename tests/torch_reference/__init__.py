"""PyTorch re-statements of official models, for parity tests only (imported behind
`pytest.importorskip("torch")`)."""


def randomize_batch_norm(model) -> None:
  """Non-trivial BatchNorm statistics and affine parameters (drawn from torch's global RNG), so a
  parity test in eval mode exercises them."""
  import torch
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
