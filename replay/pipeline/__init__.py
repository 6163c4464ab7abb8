"""Stages and the pipeline graph: one module per stage type, each a small class behind the Stage interface
(stage.py), chosen by its `type` name in the scenario."""

from .embed import EmbedStage
from .kv_retrieval import KVRetrievalStage
from .kv_transfer import KVTransferStage
from .llm import DecodeStage, LLMStage, PrefillStage
from .reasoning import ReasoningStage
from .rerank import RerankStage
from .route import RouteStage
from .tool import ToolStage
from .vector_search import VectorSearchStage

STAGES = {
    cls.type: cls
    for cls in (
        LLMStage,
        PrefillStage,
        KVTransferStage,
        DecodeStage,
        KVRetrievalStage,
        EmbedStage,
        VectorSearchStage,
        RerankStage,
        RouteStage,
        ReasoningStage,
        ToolStage,
    )
}
