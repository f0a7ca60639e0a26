# bench/run's Rails peer: Rails 6.1 (Debian's ruby-railties, ruby-activerecord, ruby-actionpack)
# in production mode, API-only, logging off, ActiveRecord on PostgreSQL (DATABASE_URL, pool 5).
require "rails"
require "active_record/railtie"
require "action_controller/railtie"

module Bench
  class Application < Rails::Application
    config.load_defaults 6.1
    config.api_only = true
    config.root = File.expand_path("..", __dir__)
    config.eager_load = true
    config.cache_classes = true
    config.consider_all_requests_local = false
    config.secret_key_base = ENV.fetch("SECRET_KEY_BASE", "0" * 64)
    # Logging off.
    config.logger = ActiveSupport::Logger.new(nil)
    config.log_level = :fatal
    config.active_record.verbose_query_logs = false
    # Nothing is written under the app: no tmp/ cache, no log/ files.
    config.paths.add "log", with: File.join(ENV.fetch("BENCH_TMP", Dir.tmpdir), "rails-log")
    config.hosts.clear
  end
end
