"""Orders from a web shop's GraphQL Admin API: a source connector built on connectors.httpkit."""

from collections.abc import Iterator, Mapping
from typing import Any

from connectors import Connector, Item, httpkit

QUERY = """query Orders($first: Int!, $after: String) {
  orders(first: $first, after: $after, sortKey: UPDATED_AT) {
    edges { cursor node { id legacyResourceId name email updatedAt displayFinancialStatus
                          totalPriceSet { shopMoney { amount currencyCode } } } }
    pageInfo { hasNextPage endCursor } } }"""


class ShopOrders(Connector):
    """Orders, oldest update first; an order's edge cursor is where the next run resumes."""

    name = "shop_orders"
    description = "Orders from a web shop's GraphQL Admin API, paged by cursor."
    options_schema = httpkit.connection_schema()  # base_url, auth, timeout, headers, verify...
    read_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "path": {"type": "string", "description": "The GraphQL endpoint's path."},
            "page_size": {"type": "integer", "minimum": 1, "description": "Orders per request."},
        },
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.http = httpkit.HttpSession.from_options(self.options, self)  # declares secrets

    def read(self, options: Mapping[str, Any], cursor: Any = None) -> Iterator[Item]:
        variables = {"first": options.get("page_size", 50), "after": cursor}
        query = {"query": QUERY, "variables": variables}
        first = httpkit.PageRequest(options.get("path", "/graphql.json"), method="POST", body=query)
        pages = self.http.pages(
            first,
            httpkit.GraphQLCursor("data.orders"),  # variables.after = pageInfo.endCursor
            records="data.orders.edges",
            check=httpkit.raise_for_graphql_errors,  # a 200 that says THROTTLED is transient
        )
        for page in pages:
            for edge in page.records:
                yield Item(data=edge["node"], position=edge["cursor"])

    def close(self) -> None:
        self.http.close()
