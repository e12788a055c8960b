"""`fptplus app RUN`: a local page to look at a trained model — upload images (DICOM included) and see the
prediction, the frozen model's selected tokens and the prompts' attention at any layer / head / prompt, and browse
a split's predictions and mistakes (`service` answers, `server` serves, `page` is the page).
"""

from .server import serve
from .service import AppError, AppService

__all__ = ["AppError", "AppService", "serve"]
