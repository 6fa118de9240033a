"""The Ray Serve application's default name: what `ccapo serve --ray` deploys and trainers look up (`ray_app`).

Apart from ray_serve so that the CLI names it without importing Ray.
"""

APP_NAME = "ccapo"
