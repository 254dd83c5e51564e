"""The domain: plain functions taking an actor/account and plain data; they never touch the request."""
