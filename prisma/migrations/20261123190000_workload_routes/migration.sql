-- AlterTable
ALTER TABLE "workloads" ADD COLUMN     "image" TEXT,
ADD COLUMN     "ports" JSONB NOT NULL DEFAULT '[]',
ADD COLUMN     "resources" JSONB NOT NULL DEFAULT '{}',
ADD COLUMN     "routes" JSONB NOT NULL DEFAULT '[]',
ADD COLUMN     "vm" JSONB;
