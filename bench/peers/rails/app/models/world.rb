class World < ApplicationRecord
end
