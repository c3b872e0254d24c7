from django.apps import AppConfig


class SftpConfig(AppConfig):
    name = "sftp"
    verbose_name = "SFTP receiver"
