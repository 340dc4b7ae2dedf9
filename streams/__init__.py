"""Faust stream processing: validate, enrich and detect over `sentinel.events.v1`."""
