# W5: GET /accounts/:id/items, an account's 20 items. The before_action validates the id from
# the path (404 unless it is an account id); the action runs one query and renders the rows.
class ItemsController < ApplicationController
  before_action :find_account

  def index
    render json: Item.where(account_id: @account_id).order(:id).limit(20).select(:id, :title, :price)
  end

  private

  def find_account
    id = Integer(params[:id], exception: false)
    return head(:not_found) unless id && id.between?(1, 1000)
    @account_id = id
  end
end
