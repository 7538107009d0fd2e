"""load_cl_dataset as a libcll-style torch Dataset: attributes, transform, num_cl=1, test rows, argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aclbuild.cl_data import ClData, load_cl_dataset
from aclbuild.errors import InputError

# fixture digits_repo (1,400 train images with 3 CLs each, 397 test images without CLs): conftest.py


@pytest.fixture(scope="module")
def train_split(digits_repo):
    return load_cl_dataset(digits_repo, "train", num_cl=3, channels_first=True)


def test_result_is_a_torch_dataset_with_libcll_attributes(digits_repo, train_split):
    data = train_split
    assert isinstance(data, torch.utils.data.Dataset) and isinstance(data, ClData)
    assert data.data is data.images and data.data.shape == (1400, 3, 8, 8)
    assert data.num_classes == 10 and data.input_dim == 3 * 8 * 8
    torch.testing.assert_close(data.true_targets, data.ord_labels)
    assert data.targets.shape == (1400, 3) and data.targets.dtype == torch.int64
    np.testing.assert_array_equal(data.targets.reshape(-1).numpy(), data.pair_cl.numpy())  # image-major, stored order
    assert not bool((data.targets == data.true_targets[:, None]).any())  # uniform synthetic CLs are never the label
    # The pair layout stays what the benchmark trains on: one item per (image, CL).
    assert len(data) == 4200
    image, cl, label = data[4]
    assert image.shape == (3, 8, 8) and int(cl) == int(data.targets[1, 1]) and int(label) == int(data.true_targets[1])


def test_num_cl_1_keeps_the_first_cl_of_each_image(digits_repo, train_split):
    first = load_cl_dataset(digits_repo, "train", num_cl=1)
    assert first.num_cl == 1 and first.targets.shape == (1400, 1) and len(first) == 1400
    torch.testing.assert_close(first.targets[:, 0], train_split.targets[:, 0])
    image, cl, label = first[7]
    assert int(cl) == int(train_split.targets[7, 0]) and int(label) == int(first.true_targets[7])
    sets = load_cl_dataset(digits_repo, "train", num_cl=1, expand=False)
    assert len(sets) == 1400 and torch.equal(sets[7][1].nonzero().flatten(), first.targets[7])


def test_test_split_gives_image_and_true_label_rows(digits_repo, train_split):
    for expand in (True, False):
        test = load_cl_dataset(digits_repo, "test", num_cl=1, expand=expand, channels_first=True)
        assert isinstance(test, torch.utils.data.Dataset) and not test.has_cls
        assert len(test) == 397 and test.data.shape == (397, 3, 8, 8) and test.input_dim == 192
        item = test[5]
        assert len(item) == 2 and item[0].shape == (3, 8, 8) and int(item[1]) == int(test.true_targets[5])
        assert bool((test.true_targets >= 0).all()) and torch.equal(test.targets, test.true_targets)
    # The transition matrix still comes from the train split's first num_cl CLs.
    same_cls = load_cl_dataset(digits_repo, "test", num_cl=3)
    torch.testing.assert_close(same_cls.transition_matrix, train_split.transition_matrix)
    images, labels = next(iter(torch.utils.data.DataLoader(test, batch_size=64)))
    assert images.shape == (64, 3, 8, 8) and torch.equal(labels, test.true_targets[:64])


def test_transform_is_applied_to_each_image(digits_repo):
    def scale(image):
        return image.float() / 255

    train = load_cl_dataset(digits_repo, "train", num_cl=1, transform=scale)
    test = load_cl_dataset(digits_repo, "test", num_cl=1, transform=scale)
    assert train.transform is scale and train.images.dtype == torch.uint8  # stored as is, transformed per item
    image, _, _ = train[3]
    assert image.dtype == torch.float32 and torch.equal(image, train.images[3].float() / 255)
    image, _ = test[3]
    torch.testing.assert_close(image, test.images[3].float() / 255)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=8)))
    assert batch[0].dtype == torch.float32 and batch[0].shape == (8, 8, 8, 3) and float(batch[0].max()) <= 1.0
    assert torch.equal(load_cl_dataset(digits_repo, "train", num_cl=1)[3][0], train.images[3])  # no transform


def test_targets_of_uneven_cls_are_a_list_per_image():
    data = ClData(torch.zeros(3, 2, 2, 3, dtype=torch.uint8), torch.tensor([0, 1, 2]), torch.tensor([2, 0, 0, 2]),
                  torch.tensor([0, 1, 2, 1]), torch.eye(3), ("a", "b", "c"), num_cl=0)  # fmt: skip
    assert [t.tolist() for t in data.targets] == [[1, 2], [], [0, 1]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_cl": 0}, "num_cl must be at least 1"),
        ({"num_cl": 4}, "num_cl=4 is larger than the 3 CLs"),
        ({"num_cl": 1.5}, "num_cl must be an integer"),
        ({"num_cl": 1, "transform": "flip"}, "transform must be callable"),
    ],
)
def test_bad_argument_is_named_as_an_argument(digits_repo, kwargs, message):
    with pytest.raises(InputError, match=message) as caught:
        load_cl_dataset(digits_repo, "train", **kwargs)
    assert "--" not in str(caught.value)  # an argument of the function, not a CLI flag
