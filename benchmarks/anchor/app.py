"""The cold-start anchor: the floor any Powertools REST handler with boto3 pays (benchmarks/bench_cold_start.py).

One route, one pydantic model, ``import boto3`` and one client built at import, as a handler of this style
is usually written. darkroom's functions are measured against a fresh process importing this file.
"""

import boto3
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from pydantic import BaseModel

dynamodb = boto3.client("dynamodb")
app = APIGatewayRestResolver(enable_validation=True)


class Item(BaseModel):
    name: str
    size: int = 1


@app.post("/items")
def create(item: Item) -> dict[str, object]:
    return {"name": item.name, "size": item.size}


def lambda_handler(event: dict[str, object], context: object) -> dict[str, object]:
    return app.resolve(event, context)
