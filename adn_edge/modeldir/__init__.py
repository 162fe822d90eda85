"""The model directory: everything ``adn-edge`` writes for one model, and its rules.

One package owns what a model directory is (docs/model-directory.md): the manifest
and its validation (:mod:`~adn_edge.modeldir.manifest`), every file name
(:mod:`~adn_edge.modeldir.names`), the readers of evaluation and benchmark results
(:mod:`~adn_edge.modeldir.results`), the preprocessing recorded for the inputs
(:mod:`~adn_edge.modeldir.preprocess`) and the one Pareto rule that plots and
policies share (:mod:`~adn_edge.modeldir.pareto`). It is plain Python and numpy, no
torch: the runtime on a robot reads model directories too. :class:`ModelDir` is one
opened directory, read and validated once and handed on.
"""

from adn_edge.modeldir.directory import ModelDir, open_dir

__all__ = ["ModelDir", "open_dir"]
