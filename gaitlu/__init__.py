"""gaitlu core: what every stage shares (sequence formats, preprocessing, evaluation, the artifact manifest).

The core imports no stage package (corpus, synth, train, export, service, gallery).
"""

__version__ = "0.1.0"
