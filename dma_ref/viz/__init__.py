"""Figures and interactive explorers, one module per topic (``dma_ref.viz.masks`` ...).

Pure functions compute what is drawn; thin ``*_widget`` factories wrap them in ipywidgets and
return ``(widget, state)`` so tests can set every control and inspect the result.
"""
