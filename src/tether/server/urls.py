from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from tether.api.throttling import throttled_login

urlpatterns = [
    path("", RedirectView.as_view(url="/docs/", permanent=False)),
    path("api/v1/", include("tether.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("admin/login/", throttled_login(admin.site.login)),  # before the admin's own
    path("admin/", admin.site.urls),
]

handler400 = "tether.api.errors.bad_request"
handler403 = "tether.api.errors.permission_denied"
handler404 = "tether.api.errors.not_found"
handler500 = "tether.api.errors.server_error"
