"""Study-level statistics: region tests (:mod:`.roi`) and voxel maps (:mod:`.voxel`)."""

from petbind.stats.roi import Contrast, mixed_model_statistics, roi_statistics

__all__ = ["Contrast", "mixed_model_statistics", "roi_statistics"]
