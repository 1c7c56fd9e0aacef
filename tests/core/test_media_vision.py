"""Which models get images: the built-in vision families and ``OPENAI_VISION_MODELS``."""

from __future__ import annotations

import pytest

from core.media import is_vision_model

# Model ids as users write them for OpenAI, Anthropic/Google through OpenRouter, Ollama tags,
# vLLM's Hugging Face names and LM Studio's.
SEES_IMAGES = [
    # OpenAI
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4o-2024-08-06",
    "openai/gpt-4o",
    "chatgpt-4o-latest",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano-2025-04-14",
    "gpt-4.5-preview",
    "gpt-4-turbo",
    "gpt-4-turbo-2024-04-09",
    "gpt-4-vision-preview",
    "gpt-4-1106-vision-preview",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-5-chat-latest",
    "gpt-5.1",
    "o1",
    "o1-2024-12-17",
    "o1-pro",
    "o3",
    "o3-pro",
    "o4-mini",
    "o4-mini-2025-04-16",
    # Anthropic
    "claude-3-5-sonnet-20241022",
    "claude-3-haiku-20240307",
    "claude-3-7-sonnet-latest",
    "anthropic/claude-3.5-sonnet",
    "claude-sonnet-4-20250514",
    "claude-opus-4-1",
    "claude-haiku-4-5",
    "anthropic/claude-sonnet-4.5",
    # Google
    "gemini-1.5-pro",
    "gemini-2.0-flash",
    "google/gemini-2.5-pro",
    "gemma3:4b",
    "gemma3:27b",
    "google/gemma-3-12b-it",
    "hf.co/unsloth/gemma-3-4b-it-GGUF:Q4_K_M",
    # Open-weight vision models (Ollama tags and Hugging Face names)
    "llava",
    "llava:13b",
    "llava-llama3",
    "llava-hf/llava-1.5-7b-hf",
    "bakllava",
    "qwen2.5vl:7b",
    "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen2-VL-2B-Instruct",
    "qwen3-vl:8b",
    "qwen-vl-max",
    "Qwen/Qwen2.5-Omni-7B",
    "pixtral-12b-2409",
    "mistralai/Pixtral-12B-2409",
    "pixtral-large-latest",
    "llama3.2-vision",
    "llama3.2-vision:11b",
    "meta-llama/Llama-3.2-11B-Vision-Instruct",
    "llama-3.2-90b-vision-preview",
    "llama4:scout",
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
    "minicpm-v",
    "openbmb/MiniCPM-V-2_6",
    "moondream",
    "moondream:1.8b",
    "OpenGVLab/InternVL3-8B",
    "microsoft/Phi-3.5-vision-instruct",
    "microsoft/Phi-4-multimodal-instruct",
    "mistral-small3.1",
    "mistral-small3.2:24b",
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
    "mistral-small-latest",
    "mistral-medium-2505",
    "ministral-3:8b",
    "granite3.2-vision",
    "ibm-granite/granite-vision-3.2-2b",
    "HuggingFaceTB/SmolVLM-Instruct",
    "glm-4.5v",
    "THUDM/GLM-4.1V-9B-Thinking",
    "grok-2-vision-1212",
    "grok-4",
    "CohereLabs/aya-vision-8b",
    "moonshotai/Kimi-VL-A3B-Instruct",
    "deepseek-ai/deepseek-vl2-tiny",
]

TEXT_ONLY = [
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-4",
    "gpt-4-0613",
    "gpt-4-turbo-preview",
    "gpt-4-1106-preview",
    "gpt-4o-audio-preview",
    "gpt-4o-mini-audio-preview",
    "gpt-4o-realtime-preview",
    "gpt-4o-mini-realtime-preview",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-tts",
    "o1-mini",
    "o1-preview",
    "o3-mini",
    "o3-mini-2025-01-31",
    "claude-2.1",
    "claude-instant-1.2",
    "gemini-2.5-flash-preview-tts",
    "gemini-embedding-001",
    "gemma3:1b",
    "google/gemma-3-1b-it",
    "gemma3:270m",
    "gemma2:9b",
    "qwen2.5:7b",
    "qwen2.5-coder:14b",
    "Qwen/Qwen2.5-7B-Instruct",
    "qwen3:8b",
    "llama3.1:8b",
    "llama3.2:3b",
    "meta-llama/Llama-3.3-70B-Instruct",
    "mistral-small-3.0",
    "mistral-small-2501",
    "mistral:7b",
    "ministral-8b-latest",
    "ministral-3b-2410",
    "phi4",
    "deepseek-r1:8b",
    "tinyllama",
    "some-local-model",
]


@pytest.mark.parametrize("model", SEES_IMAGES)
def test_known_vision_models_get_images(model: str) -> None:
    assert is_vision_model(model)


@pytest.mark.parametrize("model", TEXT_ONLY)
def test_text_only_look_alikes_get_no_images(model: str) -> None:
    assert not is_vision_model(model)


@pytest.mark.parametrize(
    ("model", "names", "sees"),
    [
        ("my-finetune", ["my-finetune"], True),  # an exact id
        ("My-Finetune", ["my-finetune"], True),  # ...compared as the families are
        ("my-finetune-v2", ["my-finetune"], False),  # exact means exact
        ("acme/vlm-7b:q4", ["acme/*"], True),  # a prefix
        ("other/vlm-7b", ["acme/*"], False),
        ("llama3.1:8b", ["*"], True),  # every model
        ("llama3.1:8b", ["", " "], False),  # empty entries name nothing
        ("gpt-4o", [], True),  # the families still apply
        ("gpt-4o", ["my-finetune"], True),
    ],
)
def test_operator_names_extend_the_families(model: str, names: list[str], sees: bool) -> None:
    assert is_vision_model(model, names) is sees
