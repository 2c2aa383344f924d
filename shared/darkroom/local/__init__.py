"""The local stack: template.yaml's routes served on loopback, AWS from an embedded moto server."""
