def rate_limit_key():
    return "global"
