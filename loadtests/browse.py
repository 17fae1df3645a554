"""Browse the catalog: list pages, searches and product details, as anonymous visitors.

Only the inventory service works here (plus nothing else: the catalog is public),
so this scenario measures how far one service and its database go under reads.
Visitors do not log in: a shopper who only looks at products has no account,
and hashing passwords would be what the run measures.

Usage: labctl load --scenario browse --users 50 --spawn-rate 10 --duration 60s
       (or: locust -f loadtests/browse.py --headless -u 50 -r 10 -t 60s)

Environment: THINK_TIME (default "0.5-2" seconds), INVENTORY_SERVICE_URL.
Expected failures: none.
"""

from locust import task

from common import ShopUser, think_time


class CatalogVisitor(ShopUser):
    login_required = False
    wait_time = think_time("0.5-2")

    @task(5)
    def list_products(self):
        self.browse_list()

    @task(3)
    def search(self):
        self.browse_search()

    @task(4)
    def product_detail(self):
        self.browse_detail()
