"""Run folders: plan a training from noisy images, train it, resume it, export its model.

- ``config``: the typed RunConfig saved as RUN/config.yaml, reading and writing it;
- ``plan``: user options -> a checked config, and the method's notes on the data;
- ``train``: training on one or more ranks, then the export (``crops``: its training data);
- ``export``: a run's checkpoint as a bioimage.io package (``weights``: loading it);
- ``checks``: what a training checks before it writes, and what a failed one leaves;
- ``noise_model``: the figure of what a dnnet run learned.

The CLI calls these functions and only prints.
"""
