"""The code around the Hydra configs in ``configs/``: where they are (``source``), the resolvers they
use (``resolvers``) and the checks of a composed config (``checks``)."""
