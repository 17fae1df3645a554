"""Create the baseline table and fill it with the catalog seed's rows (idempotent).

python -m benchsite.load_rows /path/to/inventory_service/catalog/seed.py
"""

import importlib.util
import os
import sys

import django


def main(seed_path: str) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
    django.setup()
    from django.db import connection

    from benchsite.models import Product

    spec = importlib.util.spec_from_file_location("catalog_seed", seed_path)
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    with connection.schema_editor() as editor:
        if Product._meta.db_table not in connection.introspection.table_names():
            editor.create_model(Product)
    Product.objects.all().delete()
    Product.objects.bulk_create(
        Product(sku=sku, name=name, description=description, price_cents=price, available=stock)
        for sku, name, description, price, stock in seed.PRODUCTS
    )
    print(f"{Product.objects.count()} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
