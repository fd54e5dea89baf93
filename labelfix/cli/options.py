"""Click options shared by the commands, each defined and validated once (as rasterio's rio).

Callbacks raise ``click.BadParameter``, so a bad value is a usage error (exit 2).
"""

from __future__ import annotations

import click

from labelfix.parallel import default_jobs


def _int_value(text: str, *, what: str) -> int:
    """A label value (decimal, leading zeros included, or 0x/0o/0b) that a mask can hold."""
    from labelfix.labels.labelmap import OutOfRange, parse_label_value

    try:
        return parse_label_value(str(text))
    except OutOfRange as err:
        raise click.BadParameter(f"{what}: {err}") from None
    except ValueError:
        raise click.BadParameter(f"expected an integer {what}, got {text!r}") from None


def _check_ignore(ctx, param, value):
    return tuple(_int_value(v, what="ignore value") for v in value)


#: The most classes a command takes: every id must fit a 16-bit PNG mask (0..65535).
MAX_CLASSES = 65536


def _check_num_classes(ctx, param, value):
    if value is not None and not 1 <= value <= MAX_CLASSES:
        raise click.BadParameter(
            f"must be 1..{MAX_CLASSES} (class ids are stored in 16-bit PNG masks), got {value}"
        )
    return value


def _check_jobs(ctx, param, value):
    if value is None:
        return default_jobs()
    if value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}")
    return value


def _check_out(ctx, param, value):
    if value is None:
        return None
    return _int_value(value, what="canonical ignore value")


paths_argument = click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True), metavar="PATH..."
)

ignore_option = click.option(
    "--ignore",
    multiple=True,
    callback=_check_ignore,
    metavar="V",
    help="A void value to leave out of training (repeatable), e.g. 255 for VOC, 0 for ADE20K.",
)

out_option = click.option(
    "--out",
    callback=_check_out,
    metavar="T",
    help="The canonical value every ignore value becomes, e.g. -1 or 255.",
)


def num_classes_option(*, required: bool = False):
    return click.option(
        "--num-classes",
        "-n",
        type=int,
        required=required,
        callback=_check_num_classes,
        metavar="N",
        help="Number of classes: valid ids are 0..N-1.",
    )


jobs_option = click.option(
    "--jobs",
    "-j",
    type=int,
    default=None,
    callback=_check_jobs,
    metavar="J",
    help="Worker processes (default: all cores).",
)

no_verify_option = click.option(
    "--no-verify",
    is_flag=True,
    help="Skip the shards' sha256 check against the manifest (sizes are still checked).",
)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the whole report as one JSON document."
)

glob_option = click.option(
    "--glob",
    metavar="PATTERN",
    help="File-name pattern to scan in directories (default: *.png and *.npy).",
)


# ----------------------------------------------------------------------------- mapping options
# Shared by remap and to-tfrecord: add them with @mapping_options and turn the parsed values
# into a LabelMap with label_map_from_options(**kwargs).


def _check_maps(ctx, param, value):
    from labelfix.labels.labelmap import parse_map_rule

    rules = []
    for text in value:
        try:
            rules.append(parse_map_rule(text))
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
    return tuple(rules)


def mapping_options(func):
    """Add --ignore, --out, --map, --map-file, --preset and --unmapped to a command."""
    from labelfix.labels.labelmap import UNMAPPED_POLICIES
    from labelfix.labels.presets import PRESETS

    decorators = [
        ignore_option,
        out_option,
        click.option(
            "--map",
            "maps",
            multiple=True,
            callback=_check_maps,
            metavar="A:B",
            help="Change value A to B (repeatable).",
        ),
        click.option(
            "--map-file",
            type=click.Path(exists=True, dir_okay=False),
            metavar="FILE",
            help='Rules from a JSON object {"7": 0, ...} or a CSV of from,to rows (UTF-8;'
            " 007 is decimal 7).",
        ),
        click.option(
            "--preset",
            type=click.Choice(PRESETS),
            help="A dataset's standard mapping (brings num_classes and class names).",
        ),
        click.option(
            "--unmapped",
            type=click.Choice(UNMAPPED_POLICIES),
            default=None,
            help="What values no rule names become (default: ignore with a preset, else keep).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def warn_if_ignore_is_class(ignore, num_classes) -> None:
    """One stderr line per ``--ignore`` value that is also a class id (``0..num_classes-1``):
    legal (ADE20K's 0 with 151 ids), but usually a wrong ``-n`` or a wrong void value, and
    without a word class 0 would silently count as void (``validate -n 6 --ignore 0``).
    """
    if num_classes is None:
        return
    for value in ignore:
        if 0 <= value < num_classes:
            click.echo(
                f"labelfix: warning: --ignore {value} is also a class id (0..{num_classes - 1}): "
                f"its pixels count as void, never as class {value}",
                err=True,
            )


def label_map_from_options(
    *,
    ignore,
    out,
    maps,
    map_file,
    preset,
    unmapped,
    num_classes=None,
    void_is_class=False,
    luminance=None,
):
    """Build the LabelMap the mapping options describe; usage errors become click errors."""
    from labelfix.errors import MappingError
    from labelfix.labels.presets import build_label_map

    warn_if_ignore_is_class(ignore, num_classes)
    try:
        label_map = build_label_map(
            ignore=ignore,
            out=out,
            maps=maps,
            map_file=map_file,
            preset_name=preset,
            unmapped=unmapped,
            num_classes=num_classes,
            allow_void_class=void_is_class,
            luminance=luminance,
        )
    except MappingError as err:
        raise click.UsageError(str(err)) from None
    if luminance:
        _warn_shared_luminances(luminance, label_map)
    return label_map


def _warn_shared_luminances(spec: str, label_map) -> None:
    """One stderr line naming the luminances several classes share and no ``--map`` settles:
    a mask holding one is refused (it has no rule)."""
    from labelfix.labels.luminance import luminance_rules

    void = tuple(v for v in (*label_map.ignore, label_map.out_value) if v is not None)
    _, shared = luminance_rules(spec, num_classes=label_map.num_classes, void=void)
    open_ = {v: ids for v, ids in shared.items() if v not in label_map.rules_dict}
    if open_:
        listed = "; ".join(
            f"{v} is {' and '.join(map(str, ids))} (--map {v}:{ids[0]} says which)"
            for v, ids in open_.items()
        )
        click.echo(
            f"labelfix: warning: --luminance {spec}: classes share a grey value, so a mask "
            f"holding it is refused: {listed}",
            err=True,
        )


luminance_option = click.option(
    "--luminance",
    metavar="[pillow:]COLORMAP",
    help="The masks hold palette colours read as grey (a palette PNG decoded by TensorFlow, or"
    " Pillow's convert('L') with pillow:): map each class colour's grey back to its id, for"
    " the colours of voc, cityscapes, camvid11, camvid32 or a colormap file. Needs -n or"
    " --preset.",
)


def read_option_file(path: str, *, what: str) -> str:
    """The text of a small file named by an option (:func:`labelfix.io.fs.read_text`: no
    FIFOs or devices, a size cap, UTF-8 or UTF-16 with a byte-order mark); a usage error
    naming the file otherwise."""
    from labelfix.io import fs

    try:
        return fs.read_text(path, what=what)
    except fs.UnreadableText as err:
        raise click.BadParameter(str(err)) from None


def _read_class_names(ctx, param, value):
    """One class name per line (blank lines skipped): line k names class k."""
    if value is None:
        return None
    text = read_option_file(value, what="class names file")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise click.BadParameter(f"{value}: no class names in it")
    return names


def class_names_option(help: str = "Class names, one per line (line k names class k)."):
    """--class-names FILE (also used by ``stats`` for its --html report)."""
    return click.option(
        "--class-names",
        type=click.Path(exists=True, dir_okay=False),
        callback=_read_class_names,
        metavar="FILE",
        help=help,
    )


# ----------------------------------------------------------------------------- colour masks


def _check_colormap(ctx, param, value):
    if value is None:
        return None
    from labelfix.errors import MappingError
    from labelfix.labels.colormap import load_colormap

    try:
        return load_colormap(value)
    except MappingError as err:
        raise click.BadParameter(str(err)) from None


#: Where ``--transparent`` leaves its choice for :func:`colour_policy` (it is not a parameter of
#: the commands, so that each of them gets it without naming it).
_TRANSPARENT = "labelfix.transparent"


def _keep_transparent(ctx, param, value):
    ctx.meta[_TRANSPARENT] = value
    return value


def colormap_options(func):
    """Add --colormap, --unknown-colour and --transparent (colour masks -> class ids) to a
    command; :func:`colour_policy` puts them together."""
    from labelfix.labels.colormap import BUILTIN, TRANSPARENT_POLICIES, UNKNOWN_COLOUR_POLICIES

    func = click.option(
        "--transparent",
        type=click.Choice(TRANSPARENT_POLICIES),
        default="error",
        show_default=True,
        expose_value=False,
        callback=_keep_transparent,
        help="Pixels with alpha 0 in colour masks: an error (--colormap reads colours only), or"
        " the ignore value. Partly transparent pixels are read by their colour.",
    )(func)
    func = click.option(
        "--unknown-colour",
        type=click.Choice(UNKNOWN_COLOUR_POLICIES),
        default="error",
        show_default=True,
        help="A colour the colormap does not name: an error, or the ignore value.",
    )(func)
    return click.option(
        "--colormap",
        callback=_check_colormap,
        metavar="NAME|FILE",
        help=f"Read colour masks as class ids: {', '.join(BUILTIN)}, or a file of"
        " id,name,r,g,b rows (or JSON).",
    )(func)


def colour_policy(colormap, unknown_colour: str, *, ignore=(), out=None):
    """The ColourPolicy of ``--colormap`` / ``--unknown-colour`` / ``--transparent`` (None
    without a colormap); an unknown colour, and with ``--transparent void`` a transparent
    pixel, becomes the void value :func:`~labelfix.labels.colormap.unknown_colour_void` picks
    from the run's ``ignore`` values and ``out``."""
    if colormap is None:
        return None
    from labelfix.labels.colormap import ColourPolicy, unknown_colour_void

    ctx = click.get_current_context(silent=True)
    transparent = ctx.meta.get(_TRANSPARENT, "error") if ctx is not None else "error"
    void = unknown_colour_void(ignore, out)
    return ColourPolicy(colormap, unknown_colour, void, transparent=transparent)


artifacts_option = click.option(
    "--artifacts",
    is_flag=True,
    help="Also look for lossy artifacts: values that lie only on boundaries between two other"
    " values, and specks (slower).",
)


# ----------------------------------------------------------------------------- storage, runners


class StoragePath(click.ParamType):
    """A local path (checked like ``click.Path``) or a URL such as ``gs://bucket/masks``.

    URLs go through :mod:`labelfix.io.fs` (fsspec); with ``exists=True`` they are checked there.
    """

    name = "path"

    def __init__(self, *, exists: bool = False, file_okay: bool = True, dir_okay: bool = True):
        self.exists = exists
        self.local = click.Path(exists=exists, file_okay=file_okay, dir_okay=dir_okay)

    def convert(self, value, param, ctx):
        import glob
        import os

        from labelfix.io import fs

        if not fs.is_url(value) and glob.has_magic(value) and not os.path.exists(value):
            if self.exists and not glob.glob(value):  # a quoted pattern: _expand_globs
                self.fail(f"{value!r} matches no file.", param, ctx)
            return value
        if not fs.is_url(value):
            return self.local.convert(value, param, ctx)
        if self.exists:
            from labelfix.errors import MissingExtra

            try:
                found = fs.exists(value)
            except MissingExtra as err:
                self.fail(str(err), param, ctx)
            if not found:
                self.fail(f"{value!r} does not exist.", param, ctx)
        return value


def _expand_globs(ctx, param, value):
    """Quoted local patterns (``'tfrecord/val-*'``) become the files they match, sorted."""
    import glob
    import os

    from labelfix.io import fs

    found = []
    for path in value:
        if not fs.is_url(path) and glob.has_magic(path) and not os.path.exists(path):
            found.extend(sorted(glob.glob(path)))
        else:
            found.append(path)
    return tuple(found)


storage_paths_argument = click.argument(
    "paths",
    nargs=-1,
    required=True,
    type=StoragePath(exists=True),
    callback=_expand_globs,
    metavar="PATH...",
)

RUNNERS = ("local", "beam", "dask")

runner_option = click.option(
    "--runner",
    type=click.Choice(RUNNERS),
    default="local",
    show_default=True,
    help="local: worker processes on this machine. beam: Apache Beam pipelines (pip install "
    "'labelfix[beam]'); Beam's options go after --, e.g. -- --runner=DataflowRunner, or "
    "--runner=DaskRunner --dask_client_address=tcp://HOST:8786. dask: a dask.distributed "
    "cluster (pip install 'labelfix[dask]'): -- --scheduler tcp://HOST:8786 (or "
    "DASK_SCHEDULER_ADDRESS), or -- --workers N for N processes on this machine.",
)


class PipelineCommand(click.Command):
    """A command whose arguments after ``--`` are the runner's own options, passed unparsed.

    They reach the callback as ``runner_args`` (a tuple), to be read by the engine
    (:func:`labelfix.engines.common.engine_for`); with ``--runner local`` they are a usage error.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        runner_args: tuple[str, ...] = ()
        if "--" in args:
            at = args.index("--")
            args, runner_args = args[:at], tuple(args[at + 1 :])
        rest = super().parse_args(ctx, args)
        if runner_args and ctx.params.get("runner") in (None, "local"):
            raise click.UsageError(
                f"runner options after -- ({' '.join(runner_args)}) need --runner beam or "
                "--runner dask",
                ctx,
            )
        ctx.params["runner_args"] = runner_args
        return rest

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "[-- RUNNER_OPTION...]"]


# ----------------------------------------------------------------------------- pairing
# Shared by validate, show and to-tfrecord: which image belongs to which mask
# (labelfix.io.pairing), the same options with the same meaning everywhere.


def images_option(help: str, *, required: bool = False, storage: bool = False):
    """--images DIR: the folder of the pictures the masks pair with (a URL too with
    ``storage``)."""
    kind = (
        StoragePath(exists=True, file_okay=False)
        if storage
        else click.Path(exists=True, file_okay=False)
    )
    return click.option("--images", required=required, type=kind, metavar="DIR", help=help)


def pairing_options(func):
    """Add --image-suffix and --mask-suffix; :func:`naming` puts them together."""
    func = click.option(
        "--mask-suffix",
        default="",
        metavar="TEXT",
        help="Stem suffix of the masks, e.g. _gtFine_labelTrainIds (masks without it are not "
        "paired). Default: same stem, or a known suffix (_gtFine_*, _gt, _mask, _label, _seg).",
    )(func)
    return click.option(
        "--image-suffix",
        default="",
        metavar="TEXT",
        help="Stem suffix of the images, e.g. _leftImg8bit (Cityscapes). Default: same stem, or "
        "a known suffix (_leftImg8bit, _img, _image).",
    )(func)


def naming(image_suffix: str = "", mask_suffix: str = ""):
    """The :class:`~labelfix.io.pairing.Naming` of --image-suffix / --mask-suffix."""
    from labelfix.io.pairing import Naming

    return Naming(image_suffix=image_suffix, mask_suffix=mask_suffix)


# ----------------------------------------------------------------------------- other tools' records
# Shared by stats, validate, verify and to-tfrecord --from-records: TFRecords without a labelfix
# manifest (DeepLab's build_voc2012_data.py, Model Garden's scripts, your own code), read by
# labelfix.records.foreign.


def record_key_options(func):
    """Add --mask-key, --image-key and --format-key; :func:`record_keys` puts them together."""
    func = click.option(
        "--format-key",
        metavar="KEY",
        help="Records without a manifest: the feature naming the mask's format, png or raw "
        "(default: image/segmentation/class/format).",
    )(func)
    func = click.option(
        "--image-key",
        metavar="KEY",
        help="Records without a manifest: the feature holding the encoded image (default: "
        "image/encoded).",
    )(func)
    return click.option(
        "--mask-key",
        metavar="KEY",
        help="Records without a manifest: the feature holding the encoded mask (default: "
        "image/segmentation/class/encoded, DeepLab's and Model Garden's).",
    )(func)


def record_keys(mask_key=None, image_key=None, format_key=None):
    """The :class:`~labelfix.records.example.RecordKeys` of --mask-key/--image-key/--format-key."""
    from labelfix.records.example import RecordKeys

    return RecordKeys.of(mask=mask_key, image=image_key, mask_format=format_key)
