from django.http import JsonResponse
from rest_framework import generics, serializers

from .models import Product


def ping(request):
    return JsonResponse({"ok": True})


class ProductOut(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["sku", "name", "description", "price_cents", "currency", "active", "available"]


class ProductList(generics.ListAPIView):
    serializer_class = ProductOut
    queryset = Product.objects.filter(active=True).order_by("sku")
