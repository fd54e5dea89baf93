"""The public API: every name in labelfix.__all__ resolves, lazily."""

from __future__ import annotations

import subprocess
import sys

import labelfix


def test_every_public_name_resolves():
    for name in labelfix.__all__:
        assert getattr(labelfix, name) is not None, name
    assert labelfix.__version__ == "0.1.0"


def test_importing_labelfix_loads_nothing_heavy():
    code = (
        "import sys, labelfix\n"
        "labelfix.preset('voc')\n"
        "bad = [m for m in ('tensorflow', 'keras', 'apache_beam') if m in sys.modules]\n"
        "sys.exit(1 if bad else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_import_labelfix_then_keras_load_model_finds_the_loss_and_metric(tmp_path):
    """Regression: a model compiled with labelfix's loss and metric failed to load in a fresh
    process after `import labelfix` ("Could not locate class"), because the classes registered
    themselves only when labelfix.losses was imported."""
    import keras

    path = tmp_path / "model.keras"
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile(
        loss=labelfix.MaskedSparseCategoricalCrossentropy(ignore=255),
        metrics=[labelfix.MeanIoU(3, ignore=255)],
    )
    model.save(path)  # here; the loading is what must work in a fresh process
    load = f"""
import sys, labelfix
assert "keras" not in sys.modules and "tensorflow" not in sys.modules
import keras
model = keras.saving.load_model({str(path)!r})
print(type(model.loss).__name__, model.loss.ignore, [type(m).__name__ for m in model.metrics])
"""
    out = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].startswith("MaskedSparseCategoricalCrossentropy 255")


def test_training_names_on_a_minimal_install_say_what_to_install():
    """Found trying labelfix as a new user: on a minimal install `labelfix.MeanIoU` (and the
    losses and build_model) raised a bare ModuleNotFoundError: keras, where labelfix.data
    names the extra to install."""
    code = (
        "import sys\n"
        "class NotInstalled:  # keras and tensorflow cannot be found\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('keras', 'tensorflow'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NotInstalled())\n"
        "import labelfix\n"
        "from labelfix.errors import MissingExtra\n"
        "for name in ('MeanIoU', 'MaskedSparseCategoricalCrossentropy', 'build_model'):\n"
        "    try:\n"
        "        getattr(labelfix, name)\n"
        "    except MissingExtra as err:\n"
        "        print(err)\n"
        "labelfix.preset('voc')  # the rest still works\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "labelfix.MeanIoU needs Keras 3 and TensorFlow: pip install 'labelfix[tf]'",
        "labelfix.MaskedSparseCategoricalCrossentropy needs Keras 3 and TensorFlow: pip install "
        "'labelfix[tf]'",
        "labelfix.build_model needs Keras 3 and TensorFlow: pip install 'labelfix[tf]'",
    ]
