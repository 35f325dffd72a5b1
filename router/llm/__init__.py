"""Router-LLM clients and the managed vLLM server (see router.llm.server, router.llm.http_client)."""
