class BenchController < ApplicationController
  HELLO = { message: "Hello, World!" }.freeze

  # W1.
  def json
    render json: HELLO
  end

  # W2: one random row.
  def db
    render json: World.find(random_id)
  end

  # W3: ?queries=N random rows (1..500), one query after another.
  def queries
    n = params[:queries].to_i.clamp(1, 500)
    render json: Array.new(n) { World.find(random_id) }
  end

  # W4: a 10 ms wait.
  def wait
    sleep 0.01
    render json: HELLO
  end

  private

  def random_id
    Random.rand(1..10_000)
  end
end
