"""A day at the shop: mostly browsing, some carts and drafts, a few checkouts, rare cancellations.

Per 100 actions of a logged-in shopper, about: 35 catalog pages, 12 searches,
20 product pages, 6 looks at "my orders", 3 at one order, 8 carts (a draft
order, sometimes changed, then checked out, cancelled or abandoned), 5 direct
checkouts (``DECLINE_SHARE`` of them with the declined card) and 1
cancellation of a confirmed order (refund and restock).

Usage: labctl load --scenario mixed --users 100 --spawn-rate 10 --duration 5m

Environment: THINK_TIME (default "1-3"), DECLINE_SHARE, SAGA_MODE, POLL_TIMEOUT,
STOCK_FLOOR (see common.py and checkout.py).
Expected failures: none (declines and cancellations are expected outcomes).
"""

from locust import task

from common import ShopUser, listen_restock, think_time
from labhooks import use_saga_mode_from_env

listen_restock()
SAGA_SWITCH = use_saga_mode_from_env()


class Shopper(ShopUser):
    wait_time = think_time("1-3")

    @task(35)
    def list_products(self):
        self.browse_list()

    @task(12)
    def search(self):
        self.browse_search()

    @task(20)
    def product_detail(self):
        self.browse_detail()

    @task(6)
    def my_orders(self):
        self.view_orders()

    @task(3)
    def one_order(self):
        self.view_order()

    @task(8)
    def cart(self):
        super().cart()

    @task(5)
    def checkout(self):
        self.place_order()

    @task(1)
    def cancel_confirmed_order(self):
        self.cancel_confirmed()
