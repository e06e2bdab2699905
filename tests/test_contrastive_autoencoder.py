"""The contrastive-autoencoder chapter's exported pieces work from the package, outside the notebook."""
import torch

from medcl_nb.contrastive_autoencoder import (ConditionalDecoder, ContrastiveAutoencoder, paper_metrics,
                                              resnet18_backbone, resnet_features, soft_assignment, warmup_loss)


def test_warmup_loss_from_the_package():
    torch.manual_seed(0)
    model = ContrastiveAutoencoder()
    x = torch.rand(6, 1, 28, 28)
    loss, parts = warmup_loss(model, x, x.flip(-1))
    assert torch.isfinite(loss) and set(parts) == {'nt_xent', 'mse'}


def test_conditional_decoder_depends_on_the_cluster():
    model = ContrastiveAutoencoder()
    h = torch.randn(3, 128)
    cond = ConditionalDecoder(model.decoder, n_clusters=4)
    assert not torch.allclose(cond(h, torch.eye(4)[[0, 0, 0]]), cond(h, torch.eye(4)[[1, 1, 1]]))


def test_random_resnet_substitute_is_named_and_frozen():
    net, kind = resnet18_backbone(seed=0, use_imagenet=False)
    assert kind == 'random' and not any(p.requires_grad for p in net.parameters())
    assert resnet_features(net, torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 512)


def test_paper_metrics_weighted_recall_is_accuracy():
    m = paper_metrics(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 1, 0, 1]), binary=True)
    assert abs(m['recall'] - m['accuracy']) < 1e-12 and abs(m['recall_positive'] - 2 / 3) < 1e-12
