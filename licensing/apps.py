from django.apps import AppConfig


class LicensingConfig(AppConfig):
    name = "licensing"
    verbose_name = "License"

    def ready(self) -> None:
        from licensing import keys, selectors

        # A bad LICENSE_PUBLIC_KEYS stops start-up here, naming the variable, rather than
        # surfacing later as "every license is invalid".
        keys.trusted_keys()
        selectors.connect_cache_invalidation()
