"""Pictures of masks: class colours (colours.py), thumbnails, legends and contact sheets
(sheet.py), which masks to show and reading them on every core (selection.py), and the HTML
report of ``labelfix stats --html`` (report.py, the only module that imports matplotlib)."""
