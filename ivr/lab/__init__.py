"""The Asterisk lab: root filesystem, configuration, prompts and process control."""

from ivr.lab.lab import Lab, LabBuild, LabError, LabStatus, ProcessSpec
from ivr.lab.prompts import PROMPT_IDS

__all__ = ["PROMPT_IDS", "Lab", "LabBuild", "LabError", "LabStatus", "ProcessSpec"]
