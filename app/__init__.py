"""The FlexiDiT Gradio demo (UI only: layout, events, plots); all model work goes through flexi_core."""
from .ui import build_demo, launch

__all__ = ["build_demo", "launch"]
