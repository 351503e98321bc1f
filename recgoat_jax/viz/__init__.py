"""Pictures of training runs: `plot_runs` (a PNG of a run folder's curves, matplotlib, the
`plot` extra) and `TensorBoardWriter` (TensorBoard event files, tensorboardX, the
`tensorboard` extra). Both import their library only when called."""

from recgoat_jax.viz.plot import Panel, RunCurves, panels, plot_runs, read_run
from recgoat_jax.viz.tensorboard import TensorBoardWriter

__all__ = ["Panel", "RunCurves", "TensorBoardWriter", "panels", "plot_runs", "read_run"]
