return {log = {level = "warn"}}
