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
