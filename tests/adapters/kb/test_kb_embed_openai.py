"""OpenAIEmbedder with the real ``openai`` client against the loopback fake's /v1/embeddings."""

from __future__ import annotations

import math

import openai
import pytest
from pydantic import SecretStr

from adapters.kb.embed_openai import OpenAIEmbedder
from core.errors import ConfigError, KbError
from core.knowledge import Embedder
from tests.fakes.openai_embeddings import fake_vector
from tests.fakes.openai_server import FakeOpenAIServer


def embedder_for(srv: FakeOpenAIServer, **kwargs: object) -> OpenAIEmbedder:
    options: dict[str, object] = {"base_url": srv.base_url, "max_retries": 0}
    options.update(kwargs)
    return OpenAIEmbedder(**options)  # type: ignore[arg-type]


async def test_vectors_come_back_in_order_in_batches_with_the_learned_dimension() -> None:
    texts = [f"chunk number {i} about topic {i % 3}" for i in range(7)]
    async with FakeOpenAIServer(api_key="sk-fake") as srv:
        embedder = embedder_for(srv, api_key=SecretStr("sk-fake"), batch_size=3)
        assert isinstance(embedder, Embedder)
        await embedder.start()
        vectors = await embedder.embed(texts)
        query = await embedder.embed_query("topic 1")
        await embedder.aclose()
    assert (embedder.id, embedder.dimension) == ("openai:text-embedding-3-small", 1536)
    for text, vector in zip(texts, vectors, strict=True):
        assert vector == pytest.approx(fake_vector(text, 1536), abs=1e-6)
    assert query == pytest.approx(fake_vector("topic 1", 1536), abs=1e-6)
    sent = [r.body["input"] for r in srv.embedding_requests]
    # one probe at start, then batches of 3, then the query
    assert sent == [["dimension probe"], texts[0:3], texts[3:6], texts[6:7], ["topic 1"]]
    assert all(r.body["model"] == "text-embedding-3-small" for r in srv.embedding_requests)
    assert all(r.headers["Authorization"] == "Bearer sk-fake" for r in srv.embedding_requests)


async def test_another_model_and_unnormalised_server_vectors_give_unit_vectors() -> None:
    async with FakeOpenAIServer(embedding_models={"nomic-embed-text": 768}) as srv:
        embedder = embedder_for(srv, model="nomic-embed-text")
        (vector,) = await embedder.embed(["hello world"])
        await embedder.aclose()
    assert embedder.id == "openai:nomic-embed-text"
    assert embedder.dimension == 768
    assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-6)


async def test_a_blank_text_is_sent_as_a_space_not_refused() -> None:
    async with FakeOpenAIServer() as srv:
        embedder = embedder_for(srv)
        vectors = await embedder.embed(["", "text"])
        await embedder.aclose()
    assert len(vectors) == 2
    assert srv.embedding_requests[-1].body["input"] == [" ", "text"]


async def test_an_unknown_model_names_the_variable_to_set() -> None:
    async with FakeOpenAIServer() as srv:
        embedder = embedder_for(srv, model="no-such-model")
        with pytest.raises(KbError, match=r"'no-such-model' was not found.*KB_EMBEDDING_MODEL"):
            await embedder.start()
        await embedder.aclose()


async def test_a_wrong_key_says_check_the_key_without_showing_it() -> None:
    async with FakeOpenAIServer(api_key="sk-right") as srv:
        embedder = embedder_for(srv, api_key=SecretStr("sk-wrong-secret"))
        with pytest.raises(KbError, match="OPENAI_API_KEY") as caught:
            await embedder.embed(["x"])
        await embedder.aclose()
    assert "sk-wrong-secret" not in str(caught.value)


async def test_a_rate_limit_is_retried_and_a_lasting_server_error_is_a_kb_error() -> None:
    async with FakeOpenAIServer() as srv:
        embedder = embedder_for(srv, max_retries=1)
        srv.fail_rate_limited(times=1, retry_after="0")
        await embedder.start()  # the probe is retried once and succeeds
        srv.fail_server_error(times=2, status=503)
        with pytest.raises(KbError, match="answered 503"):
            await embedder.embed(["x"])
        await embedder.aclose()
    assert len(srv.embedding_requests) == 4


async def test_an_unreachable_endpoint_names_the_base_url_variable() -> None:
    async with FakeOpenAIServer() as srv:
        url = srv.base_url
    embedder = OpenAIEmbedder(base_url=url, max_retries=0, timeout=5)
    with pytest.raises(KbError, match="OPENAI_BASE_URL"):
        await embedder.start()
    await embedder.aclose()


async def test_a_text_over_the_model_limit_is_refused_with_the_server_line() -> None:
    async with FakeOpenAIServer() as srv:
        embedder = embedder_for(srv)
        with pytest.raises(KbError, match="maximum context length is 8192 tokens"):
            await embedder.embed([" ".join(["word"] * 9000)])
        await embedder.aclose()


def test_api_openai_com_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIEmbedder()


async def test_closed_embedder_refuses_and_the_dimension_is_learned_at_start() -> None:
    async with FakeOpenAIServer() as srv:
        embedder = embedder_for(srv)
        assert embedder.dimension == 0  # not learned yet
        await embedder.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await embedder.embed(["x"])


async def test_the_fake_answers_base64_and_dimensions_as_the_real_api() -> None:
    async with (
        FakeOpenAIServer() as srv,
        openai.AsyncOpenAI(api_key="k", base_url=srv.base_url, max_retries=0) as client,
    ):
        answer = await client.embeddings.create(
            model="text-embedding-3-small", input="hello", dimensions=8
        )
        with pytest.raises(openai.BadRequestError, match="dimensions"):
            await client.embeddings.create(
                model="text-embedding-ada-002", input="hello", dimensions=8
            )
        with pytest.raises(openai.BadRequestError, match="input"):
            await client.embeddings.create(model="text-embedding-3-small", input=["a"] * 2049)
    assert srv.embedding_requests[0].body["encoding_format"] == "base64"
    assert answer.data[0].embedding == pytest.approx(fake_vector("hello", 8), abs=1e-6)
    assert answer.usage.prompt_tokens == 1
