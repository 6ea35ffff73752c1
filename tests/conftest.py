"""Test-wide settings: no test starts the 60k demo by itself (the Home page's autorun); caches go to tmp."""
import os

os.environ["SELECTOR_AUTORUN"] = "0"
