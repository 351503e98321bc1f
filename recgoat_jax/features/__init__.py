"""Text features: item texts -> ``text_feat.npy``, and LLM user profiles -> ``user_text_feat.npy``.

``item_text`` reads and aligns item texts, ``encode`` runs a sentence-transformers encoder
(the ``encode`` extra, imported only when a model is loaded), ``profiles`` builds the paper's
prompts from training items and parses the answers, ``llm_backends`` answers the prompts
(offline template or an OpenAI-compatible server), ``cli`` wires them to ``recgoat-jax``.
"""

from recgoat_jax.features.encode import (MissingTextError, default_model_path, encode_aligned,
                                         encode_texts, load_encoder)
from recgoat_jax.features.item_text import align_item_texts, read_item_texts
from recgoat_jax.features.llm_backends import (GenerationReport, OpenAIBackend, TemplateBackend,
                                               generate_answers)
from recgoat_jax.features.profiles import (MalformedAnswersError, ProfileRequest, build_prompt,
                                           extract_answer, parse_answers, profile_requests)

__all__ = [
    "MissingTextError", "default_model_path", "encode_aligned", "encode_texts", "load_encoder",
    "align_item_texts", "read_item_texts",
    "GenerationReport", "OpenAIBackend", "TemplateBackend", "generate_answers",
    "MalformedAnswersError", "ProfileRequest", "build_prompt", "extract_answer", "parse_answers",
    "profile_requests",
]
