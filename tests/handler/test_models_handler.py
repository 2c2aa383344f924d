from lambda_harness import invoke, load_event


def test_list_models_in_openai_list_format(tenant):
    status, headers, body = invoke("models", load_event("models-list"))
    assert status == 200 and body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert {"local-image", "local-vision", "local-text"} <= set(ids)
    assert all(m["object"] == "model" and m["owned_by"] for m in body["data"])
    assert headers["x-request-id"]


def test_retrieve_model_and_unknown_model(tenant):
    status, _, body = invoke("models", load_event("models-retrieve"))
    assert status == 200 and body["id"] == "local-image" and "generate" in body["capabilities"]
    event = load_event("models-retrieve", path="/v1/models/nope", pathParameters={"model": "nope"})
    status, _, body = invoke("models", event)
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_models_need_a_key(tenant):
    event = load_event("models-list")
    event["headers"]["authorization"] = "Bearer nope"
    assert invoke("models", event)[0] == 401


def test_models_say_which_stream_partial_images(tenant):
    _, _, body = invoke("models", load_event("models-list"))
    flags = {m["id"]: m["partial_images"] for m in body["data"]}
    assert flags["local-image"] is True  # the stand-in draws its partials as it works
    assert flags["local-text"] is False  # a text model makes no images


def test_only_darkroom_model_servers_on_real_time_endpoints_stream_partials():
    from darkroom.catalog import ModelEntry

    def entry(**endpoint):
        return ModelEntry.model_validate(
            {
                "id": "m",
                "backend": "sagemaker",
                "capabilities": ["generate"],
                "sizes": ["1024x1024"],
                "default_size": "1024x1024",
                "endpoint": {"endpoint_name": "e", **endpoint},
            }
        )

    assert entry().streams_partials
    assert not entry(contract="hf-diffusers").streams_partials
    assert not entry(contract="jumpstart-sd").streams_partials
    assert not entry(async_inference=True).streams_partials  # SageMaker async answers through S3, once
