"""Service tier: the app in-process or on loopback, with the tiny test models or the committed one."""
