"""Task pipelines: tokenize, fit to what the artifact accepts, run, post-process as transformers does.

`edgeport.runtime.pipeline(folder)` picks one by the manifest's task; PIPELINES maps task -> class.
"""

from edgeport.runtime.pipelines.base import Encoded, Pipeline, softmax
from edgeport.runtime.pipelines.entity import ENTITY_PIPELINES
from edgeport.runtime.pipelines.qa import QuestionAnswering
from edgeport.runtime.pipelines.simple import FeatureExtraction, FillMask, NextSentencePrediction, TextClassification
from edgeport.runtime.pipelines.token_classification import TokenClassification

PIPELINES = {p.task: p for p in (FillMask, TextClassification, TokenClassification, QuestionAnswering,
                                 FeatureExtraction, NextSentencePrediction, *ENTITY_PIPELINES)}

__all__ = ["PIPELINES", "Pipeline", "Encoded", "softmax", "FillMask", "TextClassification",
           "TokenClassification", "QuestionAnswering", "FeatureExtraction", "NextSentencePrediction"]
