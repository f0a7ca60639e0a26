return {
  log = {level = "warn"},
}
