"""``labelfix doctor``: look at a dataset folder, say what convention it follows, and print
the commands to run.

:func:`diagnose` finds the masks and images under a dataset root and pairs them
(:mod:`labelfix.io.pairing`), reads a bounded sample of the masks, and concludes, each
conclusion with its evidence and how sure it is: the layout (VOC, Cityscapes, ADE20K,
mmsegmentation, labelme, plain folders), the void value (VOC's boundary 255, ADE20K's 0,
labelme's -1, or none; binary 0/255 masks whose 255 is the foreground), Cityscapes labelIds,
trainIds and instanceIds, palettes and colour masks, lossy masks, class names and the number of
classes; then the problems (unpaired files, size mismatches, EXIF-rotated images, mixed
conventions) and the commands to run next. Where the data cannot decide, both readings get
their commands. It only reads, and never imports TensorFlow.

On a dataset of your own::

    report = diagnose("VOCdevkit/VOC2012")
    report.convention, report.ignore, report.num_classes
    # -> ('voc', (255,), 21)
"""

from labelfix.doctor.diagnose import DEFAULT_SAMPLE, diagnose
from labelfix.doctor.report import CommandSet, Conclusion, DoctorReport, Problem, SplitReport

__all__ = [
    "DEFAULT_SAMPLE",
    "CommandSet",
    "Conclusion",
    "DoctorReport",
    "Problem",
    "SplitReport",
    "diagnose",
]
